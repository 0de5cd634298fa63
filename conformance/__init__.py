"""attnspec.conformance: the conformance suite that grades attention implementations
against docs/spec.md (cases, golden references, tolerance policy, adapters, runner, reports).

The engine is being built (see the project's conformance issue); until then the rule table
lives in docs/spec.md and ``examples/cross_backend.py`` grades attnspec on every installed
backend against float64.
"""
