"""Every string the public pages show, one dict per language; English is the fallback.

A language is chosen from the request's Accept-Language (by q-value, primary subtag). To add
one, add a dict with the same keys (tests check every language has every English key).
"""

from __future__ import annotations

DEFAULT_LANGUAGE = "en"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "invalid_title": "This link is not valid",
        "invalid_body": (
            "This link is not valid or has expired. If you copied it from an email, check"
            " that you copied all of it."
        ),
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_question": "Stop sending email to {email} from these lists?",
        "unsubscribe_question_everything": "Stop sending any email to {email}?",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed_body": "{email} will no longer receive email from these lists:",
        "unsubscribed_body_everything": "{email} will no longer receive any email from us.",
        "no_lists": "(no lists)",
        "manage_link": "Manage all your subscriptions",
        "preferences_title": "Your subscriptions",
        "preferences_intro": "Choose which lists send email to {email}.",
        "preferences_legend": "Lists",
        "preferences_none": "You are not on any list.",
        "state_subscribed": "subscribed",
        "state_unsubscribed": "unsubscribed",
        "state_unconfirmed": "waiting for confirmation",
        "save_button": "Save my choices",
        "everything_heading": "Unsubscribe from everything",
        "everything_body": "Stop every email to {email}, from every list.",
        "everything_button": "Unsubscribe from everything",
        "saved": "Your choices were saved.",
        "suppressed_note": (
            "You unsubscribed from everything: no email is sent to this address. Subscribing"
            " to a list again lifts that."
        ),
        "error_title": "This request could not be handled",
        "error_too_large": "The request is too large: at most {limit} KB are accepted.",
        "error_bad_length": "The request's Content-Length header is not a single number.",
        "error_too_many_fields": "The form has too many fields: at most {fields} are accepted.",
        "error_bad_encoding": "The form could not be read: it is not correctly encoded.",
        "error_bad_utf8": "The form could not be read: it is not valid UTF-8 text.",
        "error_charset": "The form must be sent as UTF-8.",
        "error_content_type": (
            "The form must be sent as application/x-www-form-urlencoded or multipart/form-data."
        ),
        "error_no_action": (
            "The request does not say what to do: a one-click unsubscribe sends"
            " List-Unsubscribe=One-Click, and the button on the page sends confirm=yes."
        ),
        "error_bad_action": (
            'The request does not say what to do: choose "Save my choices" or'
            ' "Unsubscribe from everything" on the page.'
        ),
        "error_bad_list": "The form names a list that is not a list number.",
        "error_method": "This page does not accept that kind of request.",
    },
    "fr": {
        "invalid_title": "Ce lien n'est pas valide",
        "invalid_body": (
            "Ce lien n'est pas valide ou a expiré. Si vous l'avez copié depuis un e-mail,"
            " vérifiez que vous l'avez copié en entier."
        ),
        "unsubscribe_title": "Se désabonner",
        "unsubscribe_question": "Ne plus envoyer d'e-mails de ces listes à {email} ?",
        "unsubscribe_question_everything": "Ne plus envoyer aucun e-mail à {email} ?",
        "unsubscribe_button": "Me désabonner",
        "unsubscribed_title": "Vous êtes désabonné",
        "unsubscribed_body": "{email} ne recevra plus d'e-mails de ces listes :",
        "unsubscribed_body_everything": "{email} ne recevra plus aucun e-mail de notre part.",
        "no_lists": "(aucune liste)",
        "manage_link": "Gérer tous vos abonnements",
        "preferences_title": "Vos abonnements",
        "preferences_intro": "Choisissez les listes qui envoient des e-mails à {email}.",
        "preferences_legend": "Listes",
        "preferences_none": "Vous n'êtes inscrit à aucune liste.",
        "state_subscribed": "abonné",
        "state_unsubscribed": "désabonné",
        "state_unconfirmed": "en attente de confirmation",
        "save_button": "Enregistrer mes choix",
        "everything_heading": "Se désabonner de tout",
        "everything_body": "Ne plus envoyer aucun e-mail à {email}, d'aucune liste.",
        "everything_button": "Me désabonner de tout",
        "saved": "Vos choix ont été enregistrés.",
        "suppressed_note": (
            "Vous vous êtes désabonné de tout : aucun e-mail n'est envoyé à cette adresse."
            " Vous abonner de nouveau à une liste lève ce blocage."
        ),
        "error_title": "Cette demande n'a pas pu être traitée",
        "error_too_large": "La demande est trop grande : {limit} Ko au plus sont acceptés.",
        "error_bad_length": "L'en-tête Content-Length de la demande n'est pas un nombre unique.",
        "error_too_many_fields": (
            "Le formulaire a trop de champs : {fields} au plus sont acceptés."
        ),
        "error_bad_encoding": "Le formulaire est illisible : il n'est pas correctement encodé.",
        "error_bad_utf8": "Le formulaire est illisible : ce n'est pas du texte UTF-8 valide.",
        "error_charset": "Le formulaire doit être envoyé en UTF-8.",
        "error_content_type": (
            "Le formulaire doit être envoyé en application/x-www-form-urlencoded ou"
            " multipart/form-data."
        ),
        "error_no_action": (
            "La demande ne dit pas quoi faire : un désabonnement en un clic envoie"
            " List-Unsubscribe=One-Click, et le bouton de la page envoie confirm=yes."
        ),
        "error_bad_action": (
            "La demande ne dit pas quoi faire : choisissez « Enregistrer mes choix » ou"
            " « Me désabonner de tout » sur la page."
        ),
        "error_bad_list": "Le formulaire désigne une liste qui n'est pas un numéro de liste.",
        "error_method": "Cette page n'accepte pas ce type de demande.",
    },
    "de": {
        "invalid_title": "Dieser Link ist ungültig",
        "invalid_body": (
            "Dieser Link ist ungültig oder abgelaufen. Wenn Sie ihn aus einer E-Mail kopiert"
            " haben, prüfen Sie, ob er vollständig ist."
        ),
        "unsubscribe_title": "Abmelden",
        "unsubscribe_question": "Keine E-Mails dieser Listen mehr an {email} senden?",
        "unsubscribe_question_everything": "Keine E-Mails mehr an {email} senden?",
        "unsubscribe_button": "Abmelden",
        "unsubscribed_title": "Sie sind abgemeldet",
        "unsubscribed_body": "{email} erhält keine E-Mails dieser Listen mehr:",
        "unsubscribed_body_everything": "{email} erhält keine E-Mails mehr von uns.",
        "no_lists": "(keine Listen)",
        "manage_link": "Alle Abonnements verwalten",
        "preferences_title": "Ihre Abonnements",
        "preferences_intro": "Wählen Sie, welche Listen E-Mails an {email} senden.",
        "preferences_legend": "Listen",
        "preferences_none": "Sie sind in keiner Liste.",
        "state_subscribed": "abonniert",
        "state_unsubscribed": "abgemeldet",
        "state_unconfirmed": "wartet auf Bestätigung",
        "save_button": "Auswahl speichern",
        "everything_heading": "Von allem abmelden",
        "everything_body": "Keine E-Mails mehr an {email}, von keiner Liste.",
        "everything_button": "Von allem abmelden",
        "saved": "Ihre Auswahl wurde gespeichert.",
        "suppressed_note": (
            "Sie haben sich von allem abgemeldet: an diese Adresse wird nichts gesendet. Ein"
            " erneutes Abonnieren einer Liste hebt das auf."
        ),
        "error_title": "Diese Anfrage konnte nicht bearbeitet werden",
        "error_too_large": "Die Anfrage ist zu groß: höchstens {limit} KB werden angenommen.",
        "error_bad_length": "Der Content-Length-Header der Anfrage ist keine einzelne Zahl.",
        "error_too_many_fields": (
            "Das Formular hat zu viele Felder: höchstens {fields} werden angenommen."
        ),
        "error_bad_encoding": "Das Formular ist unlesbar: es ist nicht korrekt kodiert.",
        "error_bad_utf8": "Das Formular ist unlesbar: es ist kein gültiger UTF-8-Text.",
        "error_charset": "Das Formular muss als UTF-8 gesendet werden.",
        "error_content_type": (
            "Das Formular muss als application/x-www-form-urlencoded oder"
            " multipart/form-data gesendet werden."
        ),
        "error_no_action": (
            "Die Anfrage sagt nicht, was zu tun ist: eine Ein-Klick-Abmeldung sendet"
            " List-Unsubscribe=One-Click, die Schaltfläche der Seite sendet confirm=yes."
        ),
        "error_bad_action": (
            "Die Anfrage sagt nicht, was zu tun ist: wählen Sie auf der Seite"
            " „Auswahl speichern“ oder „Von allem abmelden“."
        ),
        "error_bad_list": "Das Formular nennt eine Liste, die keine Listennummer ist.",
        "error_method": "Diese Seite nimmt diese Art von Anfrage nicht an.",
    },
}


def choose_language(accept_language: str | None) -> str:
    """The best language of STRINGS for an Accept-Language header, else English."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary and quality > 0:
            ranked.append((-quality, position, primary))
    for _, _, language in sorted(ranked):
        if language in STRINGS:
            return language
    return DEFAULT_LANGUAGE


def strings(language: str) -> dict[str, str]:
    return STRINGS.get(language, STRINGS[DEFAULT_LANGUAGE])
