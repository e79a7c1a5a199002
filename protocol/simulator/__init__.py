"""Local simulator."""
