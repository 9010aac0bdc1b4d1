"""What several test packages share: git servers, a redis broker, the dashboard's server, worker
scripts, and the table of the simulated pipeline's steps."""
