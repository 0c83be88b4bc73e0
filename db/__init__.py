"""PostgreSQL: migrations, queries and the ticket writer."""
