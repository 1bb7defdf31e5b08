"""The service's routes, one router per resource: ``site`` (the page, the API docs, health), ``pictures``
(counting and recounting pictures) and ``videos`` (video jobs). ``serving.app`` includes them."""
