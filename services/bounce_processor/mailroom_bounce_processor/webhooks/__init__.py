"""Provider feedback by webhook: Amazon SES (SNS), SendGrid, Postmark and Mailgun call a
public endpoint of the bounce processor with their bounces and complaints (docs/bounces.md).

Each call is authenticated the provider's way before anything in it is believed; each event
it carries is then recorded like a bounce from the mailbox (records.Recorder)."""
