"""Seed data (default prices and subscription plans) and the monthly subscription costs."""
