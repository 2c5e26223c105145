"""PostgreSQL: schema migrations, findings and referenced events, agents, rules."""
