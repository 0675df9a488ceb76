"""The deploy's phases: facts read from the hosts, then one pure planner per phase (deployment and
facts in, commands with their reasons out), listed in the order deploy runs them (``pipeline``)."""
