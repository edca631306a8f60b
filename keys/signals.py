"""Offboarding: a deactivated or deleted user's keys are revoked upstream once the change is
committed."""

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save, pre_delete
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


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL)
def revoke_keys_of_deleted_user(sender, instance, **kwargs):
    """Deleting a user leaves their keys without an owner (SET_NULL) but alive in Requesty:
    revoke them once the deletion commits. `reconcile_keys` revokes any that slip through."""
    from . import lifecycle
    from .models import IssuedKey

    pks = list(IssuedKey.objects.filter(owner=instance, status=IssuedKey.Status.ACTIVE).values_list("pk", flat=True))
    if pks:
        reason = f"offboarding of {instance.get_username()} (user deleted)"
        transaction.on_commit(lambda: lifecycle.revoke_all(IssuedKey.objects.filter(pk__in=pks), reason=reason))
