"""OpenAPI schema glue: the JWT scheme for our authentication class, and the
endpoints left out of the schema."""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class LedgerJWTScheme(SimpleJWTScheme):
    """Bearer JWT, as simplejwt's scheme (our class subclasses its authentication)."""

    target_class = "ledger_site.jwt.LedgerJWTAuthentication"
    name = "jwtAuth"


def exclude_session_login(endpoints):
    """The browsable API's HTML session login is not part of the JSON API."""
    return [e for e in endpoints if not e[0].startswith("/api/auth/session/")]
