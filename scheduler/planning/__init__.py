"""Planning: the problem, LP bound, SAT encodings and solver, simulator, baselines, plans, charts."""
