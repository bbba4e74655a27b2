"""Two factor types written against the factor contract alone, before the real SMS and WebAuthn
types exist: each is one module here plus one entry in the factories handed to the registry
(tests/api/test_factor_contract.py), with no change to any flow."""
