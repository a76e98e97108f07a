"""Who may do what, and what model code may touch.

- :mod:`~modelplane.security.scopes`: principals, scopes and the one pure authorization rule
- :mod:`~modelplane.security.tokens`: API tokens in the state store (hashed, expiring)
- :mod:`~modelplane.security.auth`: the ``Authorization`` header to a principal, cached
- :mod:`~modelplane.security.oidc`: JWTs from a company's own issuer (the ``oidc`` extra)

Sandboxing, signing and keys have modules of their own beside these.
"""

__all__: list[str] = []
