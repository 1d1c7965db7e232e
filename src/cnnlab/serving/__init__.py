"""Serving: predictions on users' inputs and the web application."""
