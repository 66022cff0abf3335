"""The WeChat channels: Official Account (公众号) and WeCom (企业微信), callbacks and APIs."""
