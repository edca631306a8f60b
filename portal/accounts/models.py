"""Who a signed-in person is at the identity provider, and what single sign-on granted them."""

from django.conf import settings
from django.db import models


class OIDCIdentity(models.Model):
    """Who a portal user is at an OpenID Connect provider. The issuer and subject (`iss`, `sub`)
    never change for a person, unlike their e-mail address, so a new address at the provider
    updates the same portal user instead of creating a second one (portal/accounts/provisioning.py)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "keys_oidcidentity"  # created by the keys app before the accounts app existed
        verbose_name = "OpenID Connect identity"
        verbose_name_plural = "OpenID Connect identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class SSOGroupGrant(models.Model):
    """A group membership that single sign-on granted. Sign-in recomputes memberships from the
    provider's group claims and only ever removes the ones recorded here: memberships granted by
    hand in Django's admin are never taken away by a sign-in."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_group_grants")
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="sso_grants")
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "keys_ssogroupgrant"  # created by the keys app before the accounts app existed
        verbose_name = "group membership granted by single sign-on"
        verbose_name_plural = "group memberships granted by single sign-on"
        constraints = [models.UniqueConstraint(fields=["user", "group"], name="sso_group_grant_user_group")]

    def __str__(self) -> str:
        return f"{self.user} in {self.group}"
