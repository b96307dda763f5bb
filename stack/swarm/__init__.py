"""The stack on Docker Swarm: its stack file, generated from docker-compose.yml (generate.py, each
service's rules in services.py)."""
