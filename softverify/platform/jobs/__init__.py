"""Ray Jobs: submitting softverify commands to a cluster and managing them (client), and
``softverify job|submit`` (cli)."""
