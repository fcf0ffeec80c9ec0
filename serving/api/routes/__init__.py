"""One router per resource of the station API."""
