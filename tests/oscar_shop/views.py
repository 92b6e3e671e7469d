"""The oscar test shop's payment step: oscar's PaymentDetailsView, taking payment as shops do."""

from oscar.apps.checkout import views
from oscar.core.loading import get_model

Source = get_model("payment", "Source")
SourceType = get_model("payment", "SourceType")

SETTLED = "Settled"


class PaymentDetailsView(views.PaymentDetailsView):
    """Charges a card (``payment=card``, the default): a payment source and a "Settled" payment
    event for the total, as a gateway integration records them. ``payment=transfer`` takes
    nothing: the money arrives later, by bank transfer."""

    def handle_payment(self, order_number, total, **kwargs):
        if self.request.POST.get("payment") == "transfer":
            return
        source_type, _created = SourceType.objects.get_or_create(name="Test card")
        self.add_payment_source(
            Source(
                source_type=source_type,
                amount_allocated=total.incl_tax,
                amount_debited=total.incl_tax,
                reference=f"card-{order_number}",
            )
        )
        self.add_payment_event(SETTLED, total.incl_tax, reference=f"card-{order_number}")
