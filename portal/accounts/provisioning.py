"""Who a single sign-on makes: the portal user behind the provider's issuer and subject.

Users are found by issuer + subject (`OIDCIdentity`), created on first sign-in and refreshed at
every sign-in; only allowed, verified e-mail domains get in; provider groups map to portal groups,
and only the memberships sign-in granted (`SSOGroupGrant`) are ever taken away.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .access import audited_elsewhere
from .failures import refuse
from .models import OIDCIdentity, SSOGroupGrant
from .oidc import expected_issuer, provider_name

ADMIN_GROUP = "Portal admins"  # created by migration 0003 with keys.portal_admin and audit.view_audit_log


def provision(request, claims: dict):
    """The user these verified claims stand for, created or refreshed, with their groups synced;
    returns it with a note for the audit log. Refuses wrong or unverified e-mail domains and
    deactivated accounts."""
    email = _allowed_email(request, claims)
    with transaction.atomic():
        user, note = _user_for(request, claims, email)
        if not user.is_active:
            raise refuse(
                request,
                f"account {user.username} is deactivated",
                "Your portal account is deactivated. Ask a portal admin if this is a mistake.",
            )
        _refresh(user, claims, email)
        with audited_elsewhere():  # the sign-in event lists the groups granted and removed
            note += _sync_groups(user, _claim_groups(claims))
    return user, note


def _allowed_email(request, claims: dict) -> str:
    email = str(claims.get("email") or "").strip()
    if "@" not in email:
        raise refuse(
            request,
            "the provider sent no e-mail address",
            f"{provider_name()} did not share your e-mail address, which the portal needs.",
        )
    if str(claims.get("email_verified", "")).lower() == "false":
        raise refuse(
            request,
            f"e-mail {email} is not verified at the provider",
            "Your e-mail address is not verified at the identity provider.",
        )
    domain = email.rsplit("@", 1)[1].lower()
    allowed = settings.OIDC_ALLOWED_EMAIL_DOMAINS
    if allowed and domain not in allowed:
        raise refuse(
            request,
            f"wrong domain: e-mail {email} is not in OIDC_ALLOWED_EMAIL_DOMAINS",
            f"Accounts at {domain} may not use this portal. Sign in with your company account.",
        )
    return email


def _user_for(request, claims: dict, email: str):
    """The portal user behind this issuer and subject: the linked one, else a new one. An existing
    non-superuser with the same e-mail (an account made before SSO, with its keys) is linked only
    when the operator opted in (OIDC_LINK_EXISTING_BY_EMAIL) and the provider asserts
    `email_verified: true`; otherwise the sign-in is refused, so an identity whose e-mail claim
    is not the provider's to vouch for (the "nOAuth" class) cannot take the account over."""
    User = get_user_model()
    # The verified `iss`, in the configured spelling (Google signs both forms of its issuer).
    issuer, subject = expected_issuer() or str(claims["iss"]), str(claims["sub"])
    identity = OIDCIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
    if identity is not None:
        OIDCIdentity.objects.filter(pk=identity.pk).update(last_sign_in_at=timezone.now())
        return identity.user, ""
    same_email = User.objects.filter(email__iexact=email, is_superuser=False).exclude(oidc_identities__issuer=issuer)
    matches = list(same_email[:2])
    if matches:
        _check_link(request, claims, email, matches)
        user, note = matches[0], "; linked to the existing account"
    else:
        user = User.objects.create_user(_free_username(email), email=email)  # no usable password
        note = "; account created"
    try:
        with transaction.atomic():
            OIDCIdentity.objects.create(user=user, issuer=issuer, subject=subject, last_sign_in_at=timezone.now())
    except IntegrityError:  # a parallel first sign-in linked it a moment ago
        raise SuspiciousOperation("identity was linked concurrently; sign in again") from None
    return user, note


def _check_link(request, claims: dict, email: str, matches: list) -> None:
    """Refuse to link a new identity to existing accounts unless it is allowed and unambiguous."""
    names = ", ".join(repr(user.username) for user in matches)
    if not settings.OIDC_LINK_EXISTING_BY_EMAIL:
        why = "linking by e-mail is off (OIDC_LINK_EXISTING_BY_EMAIL=false)"
    elif claims.get("email_verified") is not True:  # a missing claim, 0, "true" or "1" do not vouch
        why = f"email_verified is {claims.get('email_verified', 'missing')!r}, not true"
    elif len(matches) > 1:
        why = "several accounts have it"
    else:
        return
    raise refuse(
        request,
        f"not linked: e-mail {email} belongs to existing account {names} without a link to this identity; {why}",
        f"A portal account with the e-mail address {email} already exists but is not linked to your "
        f"{provider_name()} sign-in, so you were not signed in. Ask a portal admin to link it "
        "(docs/sso.md, “Linking existing accounts”).",
    )


def _free_username(email: str) -> str:
    User = get_user_model()
    base = email.lower()[:140]
    candidate, n = base, 1
    while User.objects.filter(username=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _refresh(user, claims: dict, email: str) -> None:
    given = str(claims.get("given_name") or "")
    family = str(claims.get("family_name") or "")
    if not (given or family) and claims.get("name"):
        given, _, family = str(claims["name"]).partition(" ")
    values = {"email": email, "first_name": given[:150], "last_name": family[:150]}
    changed = [field for field, value in values.items() if getattr(user, field) != value]
    for field in changed:
        setattr(user, field, values[field])
    if changed:
        user.save(update_fields=changed)


# --- Groups ---------------------------------------------------------------------------------------
def _claim_groups(claims: dict) -> set[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    return {str(group) for group in value if isinstance(group, str | int)} if isinstance(value, list) else set()


def admin_group() -> Group:
    """The "Portal admins" group (migration 0003), recreated if someone deleted it."""
    group, created = Group.objects.get_or_create(name=ADMIN_GROUP)
    if created:
        group.permissions.add(
            *Permission.objects.filter(
                Q(content_type__app_label="keys", codename="portal_admin")
                | Q(content_type__app_label="audit", codename="view_audit_log")
            )
        )
    return group


def _sync_groups(user, claimed: set[str]) -> str:
    """Make the memberships sign-in manages match the provider's groups; leave the rest alone."""
    wanted = set(Group.objects.filter(name__in=claimed, spending_policy__isnull=False).exclude(name=ADMIN_GROUP))
    if claimed & set(settings.OIDC_ADMIN_GROUPS):
        wanted.add(admin_group())
    current = set(user.groups.all())
    granted = {grant.group: grant for grant in SSOGroupGrant.objects.filter(user=user).select_related("group")}
    added = sorted(wanted - current, key=str)
    removed = sorted((group for group in granted if group not in wanted), key=str)
    if added:
        user.groups.add(*added)
        for group in added:
            SSOGroupGrant.objects.get_or_create(user=user, group=group)
    if removed:
        user.groups.remove(*removed)
        SSOGroupGrant.objects.filter(user=user, group__in=removed).delete()
    changes = [f"+{g.name}" for g in added] + [f"-{g.name}" for g in removed]
    return f"; groups {' '.join(changes)}" if changes else ""
