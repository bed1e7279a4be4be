"""The status page's static files (HTML, CSS, JS), served by coord.server.http.status_page."""
