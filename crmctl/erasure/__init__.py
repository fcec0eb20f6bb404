"""GDPR erasure: requests, the batched erasure run, verification, suppression and retention."""
