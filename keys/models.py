"""What the portal stores about Requesty keys: issuance attempts, issued keys (ids only), spending
policies, approvals and onboarding templates. The audit trail lives in portal/audit.

No model has a field for a key's secret; docs/security.md, invariant I1.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

LEVELS = [("none", "none"), ("read", "read"), ("write", "write")]
REASON_MAX_LENGTH = 500  # an approval request's reason: a sentence or two, copied into the audit log


def default_max_key_days() -> int | None:
    """A new spending policy's maximum key lifetime: PORTAL_MAX_KEY_DAYS (0 there: no maximum)."""
    return settings.PORTAL_MAX_KEY_DAYS or None


class Issuance(models.Model):
    """One attempt to mint a key, committed *before* Requesty is called (the state machine in
    docs/security.md). Its id doubles as the reference shown to users and as the marker in the
    upstream key name that lets reconciliation match keys with certainty."""

    class State(models.TextChoices):
        REQUESTED = "requested"  # committed, Requesty not yet answered
        ISSUED = "issued"  # Requesty created it, record and audit committed
        REJECTED = "rejected"  # a definite no: 4xx or the request never left
        UNKNOWN = "unknown"  # Requesty may have created it; reconciliation decides
        COMPENSATED = "compensated"  # created upstream, then deleted by the portal
        ABSENT = "absent"  # reconciliation proved nothing was created

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    nonce = models.CharField(max_length=64, unique=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    name = models.CharField(max_length=64)
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2)
    manage = models.CharField(max_length=5, choices=LEVELS)
    completions = models.CharField(max_length=5, choices=LEVELS)
    state = models.CharField(max_length=12, choices=State.choices, default=State.REQUESTED)
    api_key_id = models.CharField(max_length=64, blank=True, default="")
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When the key is to stop working (None: never); set upstream after the create (keys/expiry.py).
    expires_at = models.DateTimeField(null=True, blank=True)
    # A rotation's replacement: the key it replaces, which is untouched unless this one is issued.
    rotates = models.ForeignKey("IssuedKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="rotations")

    class Meta:
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def reference(self) -> str:
        """Short id for messages and support conversations."""
        return self.id.hex[:12]

    @property
    def upstream_name(self) -> str:
        return f"{self.name} [portal:{self.reference}]"

    @property
    def permissions(self) -> dict[str, str]:
        return {"manage": self.manage, "completions": self.completions}


class IssuedKey(models.Model):
    """A key Requesty created for a portal user: its id and what was asked, never its secret."""

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        REVOKED = "revoked", "revoked"
        DELETED_UPSTREAM = "deleted", "deleted outside the portal"
        EXPIRED = "expired", "expired"

    api_key_id = models.CharField(max_length=64, unique=True)
    issuance = models.OneToOneField(Issuance, on_delete=models.PROTECT, related_name="issued_key")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="issued_keys"
    )
    name = models.CharField(max_length=64)
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2)
    manage = models.CharField(max_length=5, choices=LEVELS)
    completions = models.CharField(max_length=5, choices=LEVELS)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Spend as Requesty last reported it, so a busy "My keys" page does not call Requesty for
    # every row on every load (kept in the database: shared by every portal process).
    spend = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    spend_checked_at = models.DateTimeField(null=True, blank=True)
    # Set when offboarding could not revoke the key upstream; admins see these listed.
    revocation_failed_at = models.DateTimeField(null=True, blank=True)
    # A limit change sent to Requesty whose outcome is not settled yet (set, and committed, before
    # the call). Until settled the key counts at the higher of the two limits (policy.headroom), so
    # an unknown outcome cannot be used to exceed the caps; reconcile_keys settles it from the list.
    pending_limit = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    pending_limit_at = models.DateTimeField(null=True, blank=True)
    # The onboarding template the key was made from (its slug), for the `template` label.
    template = models.CharField(max_length=50, blank=True)
    # The portal's labels as Requesty last confirmed them (keys/labels.py); None: never confirmed,
    # so `housekeeping` labels it. A different wanted set (a new team) is sent again.
    labels_applied = models.JSONField(null=True, blank=True)
    # The last day with requests, as the organization's usage last showed it (keys/usage.py).
    last_used_on = models.DateField(null=True, blank=True)
    # Idle keys (keys/idle.py): when the owner was asked "still needed?", and when they said keep.
    idle_notified_at = models.DateTimeField(null=True, blank=True)
    kept_at = models.DateTimeField(null=True, blank=True)
    # The portal's own record of when the key ends (None: never), which it enforces whatever
    # Requesty does (docs/security.md, I6). `expiry_retry_at` is set while Requesty has not
    # confirmed `expires_at`: "expiry not yet set in Requesty", retried by housekeeping from then.
    expires_at = models.DateTimeField(null=True, blank=True)
    expiry_retry_at = models.DateTimeField(null=True, blank=True)
    expiry_failures = models.PositiveSmallIntegerField(default=0)
    # The smallest reminder window (days before expiry) already e-mailed for this expiry.
    reminded_days = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]  # newest first; the id breaks ties (keys/listing.py pages so)
        indexes = [
            models.Index(fields=["owner", "status"]),
            # The key list's keyset pages, for everyone ("All keys") and per owner ("My keys").
            models.Index(fields=["created_at", "id"], name="issuedkey_created"),
            models.Index(fields=["owner", "created_at", "id"], name="issuedkey_owner_created"),
            # Housekeeping's due work: keys to end, and keys whose expiry Requesty has not confirmed.
            models.Index(fields=["status", "expires_at"], name="issuedkey_expiry"),
            models.Index(fields=["status", "expiry_retry_at"], name="issuedkey_expiry_retry"),
            # "All keys": active keys whose revocation failed, oldest failure first (listing.revocation_failures).
            models.Index(
                fields=["revocation_failed_at", "id"],
                name="issuedkey_revocation_failed",
                condition=models.Q(status="active", revocation_failed_at__isnull=False),
            ),
        ]
        permissions = [
            ("portal_admin", "Can act as a portal admin (manage rights, any limit)"),
            ("view_spend", "Can view spend (the spend page and its export)"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.api_key_id})"

    def mark_revoked(self) -> None:
        """Record that Requesty deleted the key at the portal's request (lifecycle.revoke asks it first)."""
        self._end(self.Status.REVOKED)

    @property
    def expiry_unconfirmed(self) -> bool:
        """Requesty has not confirmed this key's expiry yet (the portal still enforces it)."""
        return self.expiry_retry_at is not None and self.status == self.Status.ACTIVE

    def mark_deleted_upstream(self) -> None:
        """Record that the key is gone from Requesty without the portal revoking it: nothing is left
        upstream whose limit could still change."""
        self.pending_limit, self.pending_limit_at = None, None
        self._end(self.Status.DELETED_UPSTREAM, "pending_limit", "pending_limit_at")

    def _end(self, status: str, *also: str) -> None:
        self.status, self.ended_at, self.revocation_failed_at = status, timezone.now(), None
        self.save(update_fields=["status", "ended_at", "revocation_failed_at", *also])


class SpendingPolicy(models.Model):
    """How much the members of one group may mint. A user in several groups gets the most generous
    value of each field; a user in none gets the defaults from settings (keys/policy.py)."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="spending_policy")
    max_key_limit = models.DecimalField("maximum monthly limit per key (USD)", max_digits=12, decimal_places=2)
    max_total_limit = models.DecimalField(
        "maximum total of monthly limits across active keys (USD)", max_digits=12, decimal_places=2
    )
    max_active_keys = models.PositiveIntegerField("maximum number of active keys")
    max_completions = models.CharField(
        "highest completions level",
        max_length=5,
        choices=LEVELS,
        default="write",
        help_text="Levels up to this one are allowed.",
    )
    manage_requestable = models.BooleanField(
        "may request manage rights",
        default=False,
        help_text="Whether members may ask (through an approval) for a key with manage other than none.",
    )
    max_key_days = models.PositiveIntegerField(
        "maximum key lifetime (days)",
        null=True,
        blank=True,
        default=default_max_key_days,
        help_text="Empty: keys may be created without an expiry (“Never”).",
    )

    # What a policy sets, in the order of keys.policy.Policy's fields (policy.resolve reads them so).
    CAPS = (
        "max_key_limit",
        "max_total_limit",
        "max_active_keys",
        "max_completions",
        "manage_requestable",
        "max_key_days",
    )

    class Meta:
        verbose_name_plural = "spending policies"

    def __str__(self) -> str:
        return f"Policy for {self.group}"


class ApprovalRequest(models.Model):
    """A request for more than the requester's policy allows. Approval grants a one-time right to
    mint exactly these values within PORTAL_APPROVAL_DAYS; it never mints and holds no secret."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        USED = "used"

    class Kind(models.TextChoices):
        NEW_KEY = "new", "new key"
        LIMIT = "limit", "higher limit for an existing key"
        EXPIRY = "expiry", "later expiry for an existing key"

    kind = models.CharField(max_length=6, choices=Kind.choices, default=Kind.NEW_KEY)
    # The existing key a LIMIT or EXPIRY request is about; None for a new key.
    key = models.ForeignKey(
        "IssuedKey", null=True, blank=True, on_delete=models.CASCADE, related_name="approval_requests"
    )
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="approval_requests")
    name = models.CharField(max_length=64)
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2)
    manage = models.CharField(max_length=5, choices=LEVELS)
    completions = models.CharField(max_length=5, choices=LEVELS)
    reason = models.TextField(max_length=1000)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="approvals_decided"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(max_length=1000, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    issuance = models.OneToOneField(Issuance, null=True, blank=True, on_delete=models.SET_NULL, related_name="approval")
    # An EXPIRY request: the expiry asked for (None: never expires).
    key_expires_at = models.DateTimeField(null=True, blank=True)
    # Asked for from an onboarding link: after minting, "Continue onboarding" still applies.
    onboarding_template = models.ForeignKey(
        "OnboardingTemplate", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name} for {self.requester} ({self.status})"

    @property
    def is_usable(self) -> bool:
        return self.status == self.Status.APPROVED and self.expires_at is not None and self.expires_at > timezone.now()

    @property
    def display_status(self) -> str:
        if self.status == self.Status.APPROVED and not self.is_usable:
            return "expired"
        return self.status

    def decide(self, approve: bool, *, by, comment: str = "") -> None:
        """Approve or deny this pending request (the caller holds its row lock and audits the
        decision). An approval can be used once, within PORTAL_APPROVAL_DAYS."""
        self.status = self.Status.APPROVED if approve else self.Status.DENIED
        self.decided_by, self.decided_at = by, timezone.now()
        self.comment = comment.strip()
        if approve:
            self.expires_at = self.decided_at + timedelta(days=settings.PORTAL_APPROVAL_DAYS)
        self.save()


class OnboardingTemplate(models.Model):
    """Values an onboarding link (`/keys/new/?template=<slug>`) fills into the form."""

    slug = models.SlugField(unique=True)
    name_pattern = models.CharField(max_length=64, help_text="Key name; {username} is replaced, e.g. {username}-dev")
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2)
    manage = models.CharField(max_length=5, choices=LEVELS, default="none")
    completions = models.CharField(max_length=5, choices=LEVELS, default="write")
    return_url = models.URLField(
        blank=True, help_text="Where “Continue onboarding” leads; its host must be in ONBOARDING_RETURN_HOSTS."
    )
    description = models.CharField(max_length=200, blank=True)
    expiry_days = models.PositiveIntegerField(
        "key lifetime (days)",
        null=True,
        blank=True,
        help_text="Days until the key expires, clamped to the person's policy. Empty: the policy's default.",
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class HousekeepingJob(models.Model):
    """One row per scheduled job (keys/housekeeping.py): when it last ran, and a short lease so
    that several portal instances running `manage.py housekeeping` at once do each job once."""

    name = models.CharField(max_length=40, primary_key=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_started = models.DateTimeField(null=True, blank=True)
    last_succeeded = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return self.name


class BudgetAlert(models.Model):
    """One budget alert sent: a key's (or a person's total) month spend crossed a threshold. The
    unique constraints make it once per key (or person), threshold and month, whoever runs the check."""

    class Kind(models.TextChoices):
        KEY = "key"
        PERSON = "person"

    kind = models.CharField(max_length=6, choices=Kind.choices)
    key = models.ForeignKey(IssuedKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budget_alerts")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget_alerts")
    threshold = models.PositiveSmallIntegerField()  # percent of the limit
    month = models.DateField()  # the first day of the month (UTC)
    spend = models.DecimalField(max_digits=16, decimal_places=6)
    limit = models.DecimalField(max_digits=12, decimal_places=2)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key", "threshold", "month"], condition=models.Q(kind="key"), name="budgetalert_key_once"
            ),
            models.UniqueConstraint(
                fields=["user", "threshold", "month"], condition=models.Q(kind="person"), name="budgetalert_person_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} alert at {self.threshold}% for {self.month:%Y-%m}"


class SpendMonth(models.Model):
    """A finished month's spend per Requesty key, kept so the spend page's six-month trend needs no
    more than the one organization call (whose answers span at most 100 days)."""

    month = models.DateField()  # the first day of the month (UTC)
    api_key_id = models.CharField(max_length=64)
    spend = models.DecimalField(max_digits=16, decimal_places=6)
    requests = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["month", "api_key_id"], name="spendmonth_once")]

    def __str__(self) -> str:
        return f"{self.api_key_id} {self.month:%Y-%m}: {self.spend}"
