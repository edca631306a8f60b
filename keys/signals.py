"""Offboarding: a deactivated user's keys are revoked upstream once the change is committed."""

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def revoke_keys_of_deactivated_user(sender, instance, created, update_fields=None, **kwargs):
    if created or instance.is_active:
        return
    if update_fields is not None and "is_active" not in update_fields:
        return
    from . import lifecycle
    from .models import IssuedKey

    if IssuedKey.objects.filter(owner=instance, status=IssuedKey.Status.ACTIVE).exists():
        transaction.on_commit(lambda: lifecycle.offboard(instance))
