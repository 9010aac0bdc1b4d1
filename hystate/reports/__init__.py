"""What hystate tells people: reports (JSON, HTML, CSV), Prometheus metrics, forecasts, failure
alerts and their webhooks."""
