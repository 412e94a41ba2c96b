"""The campaign.create and campaign.update models and what a draft's request digest sees."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailroom_common.campaign_drafts import CampaignProblem, NewCampaign, check_campaign
from mailroom_common.events import (
    CAMPAIGN_COMMANDS,
    CampaignCreate,
    CampaignUpdate,
    unknown_fields,
)
from mailroom_common.intake import describe_validation_error
from mailroom_common.rendering import TemplateProblem
from mailroom_common.runtime_settings import MarketingSettings
from pydantic import ValidationError

CREATE: dict[str, Any] = {
    "name": "Spring",
    "subject": "Hi",
    "from_email": "news@example.com",
    "html_template": "<p>Hi</p>",
    "lists": ["readers"],
}


def _refusal(model: type[CampaignCreate] | type[CampaignUpdate], body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as refused:
        model.model_validate_json(json.dumps(body))
    return describe_validation_error(refused.value)


def test_both_commands_go_to_the_item_generator_and_take_unknown_fields() -> None:
    assert CAMPAIGN_COMMANDS["campaign.create"] is CampaignCreate
    assert CAMPAIGN_COMMANDS["campaign.update"] is CampaignUpdate
    create = CampaignCreate.model_validate_json(json.dumps({**CREATE, "crm_owner": "ann"}))
    assert create.name == "Spring" and unknown_fields(create) == ["crm_owner"]
    update = CampaignUpdate.model_validate_json(b'{"campaign_id": 4, "later": true}')
    assert update.campaign_id == 4 and update.subject is None


def test_a_refusal_names_the_field() -> None:
    assert _refusal(CampaignCreate, {**CREATE, "name": 5}) == (
        "name: Input should be a valid string"
    )
    assert _refusal(CampaignCreate, {**CREATE, "list_ids": [0]}).startswith("list_ids.0:")
    assert _refusal(CampaignCreate, {**CREATE, "subject": "a\x00b"}) == (
        "subject holds a NUL character, which PostgreSQL cannot store"
    )
    missing = {k: v for k, v in CREATE.items() if k != "from_email"}
    assert _refusal(CampaignCreate, missing) == "from_email: Field required"
    assert _refusal(CampaignUpdate, {"name": "x"}) == "campaign_id: Field required"
    assert _refusal(CampaignUpdate, {"campaign_id": 2**63}).startswith("campaign_id:")


def test_the_digest_sees_content_not_the_order_of_lists() -> None:
    one = NewCampaign.of(CampaignCreate.model_validate({**CREATE, "lists": ["a", "b", "a"]}))
    same = NewCampaign.of(
        CampaignCreate.model_validate({**CREATE, "lists": ["b", "a"], "correlation_id": "x"})
    )
    other = NewCampaign.of(CampaignCreate.model_validate({**CREATE, "subject": "Hi!"}))
    assert one.digest() == same.digest() != other.digest()


def test_a_problem_gives_the_field_to_the_command_and_the_old_wording_to_the_cli() -> None:
    problem = CampaignProblem("html_template", "unexpected '/'", line=3, said="html, line 3: x")
    assert problem.reason == "html_template, line 3: unexpected '/'"
    assert str(problem) == "html, line 3: x"
    assert str(CampaignProblem("list_ids", "list 9 does not exist")) == (
        "list_ids: list 9 does not exist"
    )


def _campaign(**changes: Any) -> NewCampaign:
    values: dict[str, Any] = {
        "name": "Spring",
        "subject": "News for {{ contact.first_name }}",
        "from_email": "news@example.com",
        "from_name": "",
        "html_template": "<p>x</p>",
        "text_template": None,
        "lists": ["readers"],
    }
    return NewCampaign(**{**values, **changes})


@pytest.mark.parametrize(
    "html",
    [
        "{% for item in contact.items %}<li>{{ loop.index }}. {{ item }}</li>{% endfor %}",
        "{% for a, b in [(1, 2)] %}{{ a }}{{ b }}{{ loop.first }}{% else %}none{% endfor %}",
        "{% for x in contact.tree recursive %}{{ loop(x.kids) if x.kids }}{% endfor %}",
        "{% set greeting = 'Hi' %}<p>{{ greeting }} {{ contact.first_name }}</p>",
        "{% set a, b = 1, 2 %}{{ a }}{{ b }}",
        "{% set block %}{{ contact.email }}{% endset %}{{ block }}",
        "{% if contact.vip %}{% set hi = 'Dear' %}{% else %}{% set hi = 'Hi' %}{% endif %}{{ hi }}",
        "{% set ns = namespace(n=0) %}{% for x in range(3) %}{% set ns.n = ns.n + x %}"
        "{% endfor %}{{ ns.n }}",
        "{% with x = 1 %}{{ x }}{% endwith %}",
        "{% macro row(a, b='x') %}<td>{{ a }}{{ b }}{{ varargs }}{{ kwargs }}</td>{% endmacro %}"
        "{{ row(1, 2, 3, c=4) }}",
        "{% macro box() %}<div>{{ caller() }}</div>{% endmacro %}{% call box() %}hi{% endcall %}",
        "<p>{{ contact.name | default('friend', true) | truncate(20, true, '...') }}</p>",
        "{% for row in contact.items | batch(2) %}{{ row | join(', ') }}{% endfor %}",
        "<p>{{ unsubscribe_url }} {{ manage_url }} {{ campaign.name }} {{ lipsum(1) }}</p>",
    ],
)
def test_a_template_that_uses_only_what_it_is_given_or_makes_is_taken(html: str) -> None:
    check_campaign(_campaign(html_template=html), MarketingSettings())
    check_campaign(_campaign(text_template=html, subject=html), MarketingSettings())


@pytest.mark.parametrize(
    ("where", "template", "name", "line"),
    [
        ("html_template", "<p>\n{{ first_name }}</p>", "first_name", 2),
        ("subject", "Hi {{ contact.first_name }} {{ campaign_name }}", "campaign_name", 1),
        ("text_template", "{% for x in items %}{{ x }}{% endfor %}", "items", 1),
        ("html_template", "{{ greet }}{% if contact.vip %}{% set hi = 1 %}{% endif %}", "greet", 1),
    ],
)
def test_a_name_no_template_is_given_is_refused_where_it_is(
    where: str, template: str, name: str, line: int
) -> None:
    with pytest.raises(TemplateProblem) as refused:
        check_campaign(_campaign(**{where: template}), MarketingSettings())
    part = {"html_template": "html", "text_template": "text"}.get(where, where)
    assert (refused.value.part, refused.value.line) == (part, line)
    assert f"unknown variable '{name}'" in refused.value.problem
