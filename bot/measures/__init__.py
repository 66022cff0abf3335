"""What the operation is for, measured: loyalty and the AARRR chain, surveys, referrals."""
