"""Pure planning: graph view, DLA rules, rewrites, cost model, profiles, solver, simulator, plans.

Nothing here imports ``hxsched.runtime`` or any hardware library.
"""
