"""Talking to Tencent Cloud VOD (no Flask): SDK clients with injectable endpoints, and uploads."""
