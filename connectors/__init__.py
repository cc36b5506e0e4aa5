"""Bank-specific connector plugins: what a dialect file cannot express (see `connectors.base`).

A plugin may import `switch.domain` and `switch.iso` only; the engine calls it.

Importing the package registers the plugins shipped with kswitch; a plugin of your
own lives in ``connectors/<name>.py`` and is imported when a connector names it.
"""

from connectors import angkor, sakura
from connectors.base import ConnectorPlugin, PaymentContext, UnknownPlugin, plugin_class, register, registered

__all__ = ["ConnectorPlugin", "PaymentContext", "UnknownPlugin", "angkor", "plugin_class", "register", "registered",
           "sakura"]
