"""Static files storage: WhiteNoise's compressed manifest storage (hashed
names, far-future caching) once ``collectstatic`` has run, and plain names
before that (tests, a fresh checkout) instead of failing the page."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    manifest_strict = False

    def hashed_name(self, name, content=None, filename=None):
        try:
            return super().hashed_name(name, content, filename)
        except ValueError:
            # Not collected yet: serve it by its own name.
            return name
