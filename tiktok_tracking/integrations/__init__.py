"""Optional integrations with other Django packages, one module each, installed as extras."""
