"""The deploy's phases, each a pure planner: a deployment and the hosts' facts in, commands out."""
