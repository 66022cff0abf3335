"""Running the community groups: scheduled group posts (社群 SOP), FAQ answers, moderation.

``schedule`` reads when a plan posts; ``sop`` manages post plans and posts due slots
through the outbox; ``faq`` matches questions and answers them with a cool-down;
``moderation`` keeps groups clean (links from newcomers, floods, banned words, newcomer
confirmation, ``/warn`` ``/mute`` ``/ban`` ``/unban``) and audits every action; ``errors``
has the one error they raise, translated for the reader.
"""
