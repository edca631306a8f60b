"""A mint's expiry and label calls go out side by side (keys/sidecalls.py): proved by the stand-in
holding them until both are in flight at once (Fault.together), never by timing. With no free pool
thread they go one after the other, and a side call that never reports is an unknown outcome."""

from __future__ import annotations

import threading

from keys import expiry, labels, requesty, sidecalls
from keys.models import IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, URL, form_data

AFTER_CREATE = "/v1/manage/apikey/"  # the expiry and label calls; not the create


def actions() -> list[tuple[str, str]]:
    return list(AuditEvent.objects.order_by("seq").values_list("action", "outcome"))


def test_the_expiry_and_label_calls_are_in_flight_at_once(rclient, requester, standin, canary):
    # Either call, sent alone, would wait 2 s and get a 504: both succeed only if they overlap.
    standin.inject(Fault.together(2, seconds=2), method="POST", path=AFTER_CREATE, times=2)
    response = rclient.post(URL, form_data(requester, name="both", expires="30"), **HTMX)
    assert response.status_code == 200 and canary in response.content.decode()
    key = IssuedKey.objects.get(name="both")
    upstream = standin.keys[key.api_key_id]
    assert upstream["expires_at"] is not None and upstream["labels"]["owner"] == "rita"
    assert key.expiry_retry_at is None and key.labels_applied["owner"] == "rita"
    # Recorded in the request thread, in the order they always were: the expiry, then the labels.
    assert actions() == [
        ("mint.requested", "pending"),
        ("mint.issued", "success"),
        ("key.expiry_set", "success"),
        ("key.labelled", "success"),
    ]


def test_the_outcomes_are_recorded_once_both_calls_are_back(rclient, requester, standin, monkeypatch):
    """Nothing is recorded (and no audit append waits on the chain's lock) while a call of the mint
    still runs: here the label call is sent only after the expiry call is back, so it ends last."""
    expiry_back, labels_when_recorded = threading.Event(), []
    set_expiry, label_call, pushed = requesty.set_expiry, labels.NewKeyLabels.call, expiry.pushed

    def set_expiry_and_tell(*args):
        set_expiry(*args)
        expiry_back.set()

    def call_after_the_expiry(self):
        send = label_call(self)

        def held():
            expiry_back.wait(5)
            send()

        return held

    def recording(key, *args, **kwargs):
        labels_when_recorded.append(dict(standin.keys[key.api_key_id]["labels"]))
        return pushed(key, *args, **kwargs)

    monkeypatch.setattr(requesty, "set_expiry", set_expiry_and_tell)
    monkeypatch.setattr(labels.NewKeyLabels, "call", call_after_the_expiry)
    monkeypatch.setattr(expiry, "pushed", recording)
    assert rclient.post(URL, form_data(requester, name="last", expires="30"), **HTMX).status_code == 200
    assert labels_when_recorded[0].get("owner") == "rita"  # the label call was back before the first record
    assert actions()[2:] == [("key.expiry_set", "success"), ("key.labelled", "success")]


def test_with_no_free_thread_the_calls_go_one_after_the_other(rclient, requester, standin, canary, monkeypatch):
    busy = threading.BoundedSemaphore(1)
    busy.acquire()
    monkeypatch.setattr(sidecalls, "_free", busy)  # every pool thread taken
    standin.inject(Fault.together(2, seconds=0.3), method="POST", path=AFTER_CREATE, times=2)
    response = rclient.post(URL, form_data(requester, name="alone", expires="30"), **HTMX)
    assert response.status_code == 200 and canary in response.content.decode()  # the key is never lost
    key = IssuedKey.objects.get(name="alone")
    assert key.expiry_retry_at is not None and key.labels_applied is None  # housekeeping retries both
    assert actions()[2:] == [("key.expiry_failed", "unknown"), ("key.label_failed", "unknown")]
    assert len(standin.calls_to("POST", AFTER_CREATE)) == 2


def test_a_key_that_never_expires_has_one_call_after_the_create(aclient, admin_user, standin):
    response = aclient.post(URL, form_data(admin_user, name="forever", expires="never"), **HTMX)
    assert response.status_code == 200
    key = IssuedKey.objects.get(name="forever")
    assert [c.path for c in standin.calls_to("POST", AFTER_CREATE)] == [f"{AFTER_CREATE}{key.api_key_id}/label"]
    assert actions()[-1] == ("key.labelled", "success")


def test_a_side_call_that_never_reports_is_an_unknown_outcome(settings, monkeypatch):
    settings.REQUESTY_CONNECT_TIMEOUT, settings.REQUESTY_READ_TIMEOUT = 0.05, 0.05
    monkeypatch.setattr(sidecalls, "GRACE_SECONDS", 0)
    release = threading.Event()
    pending = sidecalls.start(lambda: release.wait(10))  # stands for a thread that never reports
    try:
        assert pending.in_pool
        error = pending.outcome()
    finally:
        release.set()
    assert isinstance(error, requesty.Unavailable)


def test_what_a_side_call_raised_comes_back_as_its_outcome():
    def refused():
        raise requesty.BadRequest("no", 400)

    assert sidecalls.start(lambda: None).outcome() is None
    error = sidecalls.start(refused).outcome()
    assert isinstance(error, requesty.BadRequest) and error.status == 400
