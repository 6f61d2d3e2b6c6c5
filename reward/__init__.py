"""GenRM reward service and drop-in reward adapters for TRL, OpenRLHF and verl.

- `reward.service`: start/stop the service (verifier replicas as Ray actors behind a batching,
  caching, fault-tolerant router; optional HTTP server inside the router).
- `reward.client`: Python clients (HTTP sync/async, in-process Ray handle).
- `reward.trl`, `reward.openrlhf`, `reward.verl`: reward functions in each framework's signature.
Importing this package is cheap; Ray is imported by the modules that need it.
"""
