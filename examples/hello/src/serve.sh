#!/bin/sh
# Serves index.html on port 8080.
exec busybox httpd -f -p 8080 -h /srv
