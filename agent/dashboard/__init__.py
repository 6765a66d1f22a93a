"""The fleet dashboard: a web page, served by ``virtbus dashboard``, that shows the fleet
live and acts on it. ``fleet`` keeps the fleet's model (presence, domains, recent
events) and pushes its changes; ``access`` says who may look and who may act;
``server`` is the HTTP side; ``static/`` the page itself (no build step, no CDN)."""
