"""Agent sessions: one bidirectional stream per agent instance."""
