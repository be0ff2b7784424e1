"""Research probes run against the toy world: RL checks, gradient-signal measurements and
pictures for the docs. They sit above the trainer and the world and may import both;
nothing in the project imports them."""
