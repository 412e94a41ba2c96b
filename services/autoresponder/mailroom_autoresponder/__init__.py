"""autoresponder: emails sent once per contact and trigger event, after a delay."""
