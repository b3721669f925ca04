"""Persistence: SQLAlchemy Core on SQLite (aiosqlite) or PostgreSQL (asyncpg)."""
