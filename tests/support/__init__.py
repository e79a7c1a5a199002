"""What the tests share that is not a fixture: helpers, scripted servers, drivers."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: README, scripts, actors
