"""Run notifications: one message per run (all orgs), by email (SMTP + STARTTLS) or Slack webhook."""
