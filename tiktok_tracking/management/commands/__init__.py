"""tiktok_check, tiktok_resend and tiktok_reconcile."""
