"""DETRDistill's three losses, one module each (pure tensor functions, no mmdet model state)."""
