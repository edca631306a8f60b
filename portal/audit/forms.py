"""The audit log's filters, shared by its pages and its exports."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from django import forms

from .models import AuditEvent


class AuditFilterForm(forms.Form):
    actor = forms.CharField(label="Actor (username)", required=False, max_length=150)
    action = forms.ChoiceField(label="Action", required=False, choices=[("", "Any action"), *AuditEvent.Action.choices])
    outcome = forms.ChoiceField(
        label="Outcome", required=False, choices=[("", "Any outcome"), *AuditEvent.Outcome.choices]
    )
    since = forms.DateField(label="From (UTC date)", required=False)
    until = forms.DateField(label="To (UTC date, inclusive)", required=False)
    q = forms.CharField(label="Key name or id contains", required=False, max_length=100)
    # The log's own events (someone viewed or exported it) are hidden unless asked for, so that
    # browsing the log does not push what it is for off the first page (chosen as an action, they show).
    own = forms.BooleanField(label="Also show views and exports of this log", required=False)
    # Keyset cursors: events older than `before`, newer than `after`, or the oldest page (`last`).
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    last = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def clean_until(self):
        until = self.cleaned_data["until"]
        if until is not None and until >= date.max:  # the filter ends the day after: no such date
            raise forms.ValidationError(f"Enter a date before {date.max:%Y-%m-%d}.")
        return until

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("The “From” date must not be after the “To” date.")
        return data

    def filter_query(self) -> str:
        """The filters (not the cursor) as a query string, for links and exports."""
        keys = ("actor", "action", "outcome", "since", "until", "q", "own")
        return urlencode({k: self.data[k] for k in keys if self.data.get(k)})
