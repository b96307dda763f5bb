"""Grafana: the dashboards' generator and the queries of every provisioned panel."""
