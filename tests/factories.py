"""factory_boy factories shared by the suite."""

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

PASSWORD = "correct-Horse-battery-9"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def perms(self, create, extracted, **kwargs):
        if extracted:
            for codename in extracted:
                app_label, _, name = codename.partition(".")
                self.user_permissions.add(
                    Permission.objects.get(content_type__app_label=app_label, codename=name)
                )
        if create:
            self.save()
