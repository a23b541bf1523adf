"""Admin form support for write-only secrets: never rendered back, blank keeps the stored value."""

from __future__ import annotations

from django import forms


class SecretFieldsForm(forms.ModelForm):
    """A ModelForm whose `secret_fields` are password inputs that never show the stored value."""

    secret_fields: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in self.secret_fields:
            if name not in self.fields:
                continue
            stored = bool(self.instance.pk and getattr(self.instance, name))
            self.fields[name] = forms.CharField(
                required=False,
                strip=False,
                widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
                label=self.fields[name].label,
                help_text="A value is stored; leave blank to keep it, or type a new one to replace it."
                if stored
                else "Stored encrypted; it is never shown again.",
            )
            self.initial.pop(name, None)

    def _post_clean(self) -> None:
        for name in self.secret_fields:
            if name in self.cleaned_data and not self.cleaned_data[name] and self.instance.pk:
                # Blank means "keep": drop it so construct_instance leaves the stored value alone.
                self.cleaned_data.pop(name)
        super()._post_clean()
