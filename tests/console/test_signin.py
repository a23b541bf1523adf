"""Signing in to the console: the front door, throttled guessing, password reset, security headers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core import mail
from django.urls import reverse

from tests import factories

pytestmark = pytest.mark.django_db

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_front_door_asks_a_stranger_to_sign_in(client):
    response = client.get("/", follow=True)

    assert response.redirect_chain[-1][0].startswith("/login/")
    assert 'name="password"' in response.content.decode()


def test_an_agent_signs_in_and_lands_in_the_console(client, people):
    response = client.post(reverse("login"), {"username": "alice", "password": "correct horse battery staple"})

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_a_wrong_password_says_so_without_saying_which_part_was_wrong(client, people):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})

    page = response.content.decode()
    assert response.status_code == 200
    assert "enter a correct username and password" in page
    assert 'value="alice"' in page  # the username stays filled in


def test_repeated_failures_lock_the_account_even_with_the_right_password(client, people):
    for _attempt in range(5):
        client.post(reverse("login"), {"username": "alice", "password": "guess"})

    response = client.post(reverse("login"), {"username": "alice", "password": "correct horse battery staple"})

    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_one_address_guessing_many_accounts_is_locked_out_too(client, people):
    for number in range(5):
        factories.UserFactory(username=f"user-{number}")
        client.post(reverse("login"), {"username": f"user-{number}", "password": "guess"})

    response = client.post(reverse("login"), {"username": "bob", "password": "correct horse battery staple"})

    assert response.status_code == 429


def test_a_forgotten_password_is_reset_by_email(client, people):
    people.agent_a.user.email = "alice@example.test"
    people.agent_a.user.save()

    client.post(reverse("password_reset"), {"email": "alice@example.test"})

    assert len(mail.outbox) == 1
    link = next(line for line in mail.outbox[0].body.splitlines() if "/account/reset/" in line)
    form = client.get(link.removeprefix("http://testserver"), follow=True)
    assert form.status_code == 200
    done = client.post(form.redirect_chain[-1][0], {"new_password1": "a brand new passphrase 7",
                                                   "new_password2": "a brand new passphrase 7"})
    assert done.status_code == 302
    signed_in = client.post(reverse("login"), {"username": "alice", "password": "a brand new passphrase 7"})
    assert signed_in.status_code == 302


def test_pages_carry_the_security_headers(client):
    response = client.get(reverse("login"))

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_the_deployment_check_is_clean_behind_https():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false",
           "SITE_URL": "https://help.example.test", "SECURE_SSL_REDIRECT": "true",
           "SECRET_KEY": "k" * 20 + "-a-long-random-looking-secret-value-for-the-check-0123456789",
           "ALLOWED_HOSTS": "help.example.test"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the browser tests' own, never a deployment's
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
