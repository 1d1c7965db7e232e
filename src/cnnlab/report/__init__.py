"""Reports: HTML reports and comparisons of finished runs."""
