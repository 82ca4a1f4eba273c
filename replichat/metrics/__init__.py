"""What a replica tells an operator: Prometheus metrics and the live cluster page, both on its
--metrics port. Nothing here runs on the write path beyond the observer's counter updates."""
