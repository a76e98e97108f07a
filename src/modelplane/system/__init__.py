"""The live system assembled from settings: the gateway, the backend, the controllers and
the API, and their lifecycle (:mod:`.live`); the gateway as each controller reads it, from
its one typed snapshot (:mod:`.gateway_views`). The one place where the planes meet: only
this package wires a data-plane or backend object into a control-plane one."""
