"""The administrator's console: the settings screens, the Job Manager and the campaigns as
server-rendered pages under /console (see docs/config.md, "The console")."""
